// calm-train-classifier run as a user would, on a copy of the bundled model: it writes a
// version-2 calm.safetensors of the kind asked for, that loads and is deterministic for a seed;
// --evaluate reports on the file in place; bad flags are refused by name before any work.
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <calm/confidence/exit_classifier.hpp>
#include <calm/io/safetensors.hpp>

#include <filesystem>
#include <string>

namespace fs = std::filesystem;
using calm::test::contains;
using calm::test::quote;
using calm::test::run_program;

// Everything here in its own namespace: the areas compile as one unit (CMakeLists.txt).
namespace test_programs_train_classifier {

namespace {

const fs::path kModel = fs::path(CALM_MODELS) / "shakespeare-8l";

// The bundled model's files without its classifier, and a few hundred tokens of its text.
fs::path model_copy(const calm::test::ScratchDir& dir) {
  const fs::path m = dir.path / "model";
  fs::create_directories(m);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"})
    fs::copy_file(kModel / f, m / f);
  std::string text;
  for (int i = 0; i < 12; ++i)
    text += "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and "
            "Juliet is the sun.\n\nJULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n";
  dir.write("text.txt", text);
  return m;
}

}  // namespace

TEST_CASE("calm-train-classifier writes a version-2 classifier of the kind asked for") {
  const calm::test::ScratchDir dir("train_classifier");
  const fs::path m = model_copy(dir);
  const std::string base = "--model " + quote(m) + " --text " + quote(dir.path / "text.txt") +
                           " --epochs 2 --seed 3 ";
  for (const char* kind : {"linear", "mlp"}) {  // mlp last: its file is compared below
    CAPTURE(kind);
    const auto run = run_program(CALM_TRAIN_CLASSIFIER_EXE, base + "--kind " + kind);
    REQUIRE_MESSAGE(run.status == 0, run.err);
    CHECK(contains(run.out, "wrote"));
    const auto file = calm::io::SafeTensorsFile::open(m / "calm.safetensors");
    CHECK(file.metadata().at("version") == "2");
    CHECK(file.metadata().at("kind") == kind);
    const calm::ExitClassifier c = calm::ExitClassifier::load(m / "calm.safetensors", 192);
    CHECK((c.kind() == calm::ExitClassifierKind::mlp) == (std::string(kind) == "mlp"));
  }
  // The same seed gives the same file, byte for byte.
  const std::string first = calm::test::read_text(m / "calm.safetensors");
  REQUIRE(run_program(CALM_TRAIN_CLASSIFIER_EXE, base + "--kind mlp").status == 0);
  CHECK(calm::test::read_text(m / "calm.safetensors") == first);
  // --evaluate reports on the file in place and leaves it as it was.
  const auto eval = run_program(CALM_TRAIN_CLASSIFIER_EXE, "--model " + quote(m) + " --text " +
                                                               quote(dir.path / "text.txt") +
                                                               " --evaluate");
  REQUIRE_MESSAGE(eval.status == 0, eval.err);
  CHECK(contains(eval.out, "layer"));
  CHECK(calm::test::read_text(m / "calm.safetensors") == first);
}

TEST_CASE("calm-train-classifier refuses bad flags by name, before writing anything") {
  const calm::test::ScratchDir dir("train_classifier_flags");
  const fs::path m = model_copy(dir);
  const std::string base = "--model " + quote(m) + " --text " + quote(dir.path / "text.txt") + " ";
  for (const auto& [flags, named] : {std::pair<std::string, std::string>{"--kind tree", "--kind"},
                                     {"--hidden-units 0", "--hidden-units"},
                                     {"--epochs 0", "--epochs"},
                                     {"--holdout 0.9", "--holdout"},
                                     {"--lr nan", "--lr"},
                                     {"--window 0", "--window"},
                                     // unsigned flags: no wrap-around of -1, no saturation
                                     {"--epochs -1", "--epochs"},
                                     {"--seed -1", "--seed"},
                                     {"--batch 99999999999999999999999", "--batch"}}) {
    CAPTURE(flags);
    const auto run = run_program(CALM_TRAIN_CLASSIFIER_EXE, base + flags);
    CHECK(run.status != 0);
    CHECK(contains(run.err, named));
    CHECK_FALSE(fs::exists(m / "calm.safetensors"));
  }
  const auto missing = run_program(CALM_TRAIN_CLASSIFIER_EXE,
                                   "--model " + quote(m) + " --text " + quote(dir.path / "none.txt"));
  CHECK(missing.status != 0);
  CHECK(contains(missing.err, "none.txt"));
}

}  // namespace test_programs_train_classifier
