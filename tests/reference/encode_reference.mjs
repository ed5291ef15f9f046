// Reference ids for calm's tokenizer.json implementation, from Hugging Face's JavaScript
// implementation of the format (@huggingface/tokenizers) on the real Llama 3 tokenizer.json.
// Usage: node encode_reference.mjs TOKENIZERS_MJS LLAMA3_DIR FIXTURES_DIR OUT_DIR
// Writes to OUT_DIR (one record per line, bytes as hex, ids space-separated):
//   records.tsv   hex(text bytes) TAB ids of encode(text) without special tokens added
//   template/     the same tokenizer.json as Llama 3.1 ships it (post_processor Sequence of
//                 ByteLevel and TemplateProcessing adding <|begin_of_text|>; merges as pairs)
//   template.tsv  hex(text) TAB ids of that one's encode(text), BOS added
//   decode.tsv    ids TAB hex(decode(ids)) (special tokens skipped, no clean-up)
// Text records are the corpus lines and generated strings below; invalid UTF-8 records are read
// as a WHATWG TextDecoder reads them (each maximal ill-formed subsequence -> U+FFFD).
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [tokenizersMjs, llamaDir, fixturesDir, outDir] = process.argv.slice(2);
if (!outDir) {
  console.error("usage: node encode_reference.mjs TOKENIZERS_MJS LLAMA3_DIR FIXTURES_DIR OUT_DIR");
  process.exit(2);
}
const { Tokenizer } = await import(pathToFileURL(tokenizersMjs).href);
const tokenizerJson = JSON.parse(readFileSync(join(llamaDir, "tokenizer.json"), "utf8"));
const tokenizerConfig = JSON.parse(readFileSync(join(llamaDir, "tokenizer_config.json"), "utf8"));
const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);

// Deterministic pseudo-random numbers (mulberry32), so that every run writes the same corpus.
let seed = 0x9e3779b9;
const random = () => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = (list) => list[Math.floor(random() * list.length)];
const int = (lo, hi) => lo + Math.floor(random() * (hi - lo + 1));
const cp = (lo, hi) => String.fromCodePoint(int(lo, hi));

const records = [];  // Buffers
const text = (s) => records.push(Buffer.from(s, "utf8"));

// 1. Corpus lines: a slice of tinyshakespeare and the bundled model's corpus, line by line and
//    in blocks of up to 12 lines (newline runs).
for (const file of ["tokenizer_reference_corpus.txt", "tokenizer_corpus.txt"]) {
  const lines = readFileSync(join(fixturesDir, file), "utf8").split("\n");
  for (const line of lines) text(line);
  for (let i = 0; i < lines.length; i += int(1, 12)) text(lines.slice(i, i + int(2, 12)).join("\n"));
}

// 2. Written by hand: what the Llama 3 regex treats specially.
const cases = [
  "", " ", "  ", "\t", "\n", "\r\n", "\r", "\n\n\n", " \n ", "a  b", "a   b   ", "   leading",
  "trailing   ", "tab\tseparated\tvalues", "mixed \t \n \r\n\t  end", "line1\r\nline2\r\n\r\nline4",
  "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678901234567890",
  "3.14159265358979", "1,234,567.89", "-42", "+1e-10", "0x7FFF_FFFF", "2024-06-01T12:34:56Z",
  "v1.2.3", "$100.00", "50%", "١٢٣٤٥", "१२३४", "①②③", "Ⅻ",
  "it's", "It'S", "you're", "YOU'RE", "we've", "I'm", "I'M", "she'll", "SHE'LL", "he'd",
  "don't", "DON'T", "'s", "'", "''", "'''s", "rock 'n' roll", "the 90's", "O'Brien's",
  "hello world", "Hello, World!", "HELLO", "hello...", "wait—what?", "«quoted»", "“smart quotes”",
  "int main(int argc, char** argv) {\n  return 0;\n}\n",
  "for (let i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
  "def f(x):\n    return x ** 2  # square\n\n\nprint(f(3))",
  "    indented four\n        indented eight\n\t\ttwo tabs",
  "#include <vector>\nstd::vector<int> v{1, 2, 3};", "a->b; c::d; e => f; g != h; i <= j",
  "{\"key\": [1, 2.5, null, true], \"nested\": {\"x\": \"y\"}}", "<html><body>hi</body></html>",
  "https://example.com/path?query=1&other=two#frag", "user@example.com", "C:\\Windows\\System32",
  "café", "cafe\u0301", "naïve", "nai\u0308ve", "Ångström", "A\u030Angstro\u0308m", "ﬁ ligature",
  "Straße", "ΑΒΓ αβγ ς", "Ελληνικά", "Русский язык", "Українська", "עברית", "العربية",
  "हिन्दी", "தமிழ்", "ไทย", "ქართული", "Հայերեն", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝐁𝐨𝐥𝐝",
  "中文字符", "日本語のテキスト", "ひらがな カタカナ", "한국어 텍스트", "漢字かな交じり文",
  "中文，标点。", "全角　スペース", "ｆｕｌｌｗｉｄｔｈ",
  "😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "❤️", "1️⃣", "🤖 robot", "emoji😀inside",
  "\u00a0nbsp\u00a0", "\u2003em space", "\u3000ideographic", "zero\u200bwidth", "\u200d", "\ufeffBOM",
  "line\u2028separator", "para\u2029sep", "next\u0085line", "\u180emongolian", "\u000b\u000c",
  "<|begin_of_text|>", "<|begin_of_text|>Hello", "Hello<|end_of_text|>", "<|eot_id|><|eot_id|>",
  "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>", "<|reserved_special_token_0|>",
  "<|reserved_special_token_250|>x", "<|reserved_special_token_251|>", "<|eot_id", "<|", "|>",
  "<|begin_of_text|<|eot_id|>", " <|eot_id|> ", "a<|eot_id|>b", "<|python_tag|>print(1)",
  "\u0000nul", "\u0001\u0002\u001f", "\u007f", "\u0080\u009f",
];
for (const c of cases) text(c);

// 3. Generated: atoms of many kinds, mixed.
const words = ["the", "The", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and",
  "token", "izer", "Llama", "calm", "exit", "early", "a", "I", "x", "HTTP", "camelCase", "snake_case"];
const atom = () => {
  switch (int(0, 17)) {
    case 0: case 1: return pick(words);
    case 2: return " ".repeat(int(1, 20));
    case 3: return pick(["\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028", "\u0085", "\u2009"])
      .repeat(int(1, 4));
    case 4: return Array.from({ length: int(1, 25) }, () => cp(0x30, 0x39)).join("");
    case 5: return pick(["'s", "'S", "'t", "'re", "'ve", "'m", "'ll", "'LL", "'d", "'D", "'x"]);
    case 6: return Array.from({ length: int(1, 6) }, () => pick([..."!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~"])).join("");
    case 7: return Array.from({ length: int(1, 8) }, () => cp(0xc0, 0x24f)).join("").replace(/\u017f/g, "s");
    case 8: return cp(0x61, 0x7a) + pick(["\u0301", "\u0308", "\u0327", "\u0303\u0304", "\u20dd"]);
    case 9: return Array.from({ length: int(1, 6) }, () => cp(0x4e00, 0x9fa5)).join("");
    case 10: return Array.from({ length: int(1, 6) }, () => cp(0x3041, 0x30fa)).join("");
    case 11: return Array.from({ length: int(1, 4) }, () => cp(0xac00, 0xd7a3)).join("");
    case 12: return Array.from({ length: int(1, 5) }, () => pick([cp(0x391, 0x3c9), cp(0x410, 0x44f),
      cp(0x5d0, 0x5ea), cp(0x627, 0x64a), cp(0x905, 0x939), cp(0xe01, 0xe2e)])).join("");
    case 13: return pick(["😀", "🎉", "👍", "👍🏿", "👩‍💻", "👨‍👩‍👧", "🧑🏽‍🚀", "🇩🇪", "✨", "☕️", "🫠", "🦙"]);
    case 14: return pick(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
      "<|end_header_id|>", "<|reserved_special_token_" + int(0, 250) + "|>", "<|eom_id|>", "<|"]);
    case 15: return cp(0x1d400, 0x1d6a3);  // mathematical alphanumerics
    case 16: return cp(0x20, 0x7e).repeat(int(1, 3));
    default: return int(0, 1) ? "\n" : " ";
  }
};
for (let i = 0; i < 2500; ++i) text(Array.from({ length: int(1, 30) }, atom).join(""));
// A few long ones: long letter, digit and space runs, and a long mixed text.
text("a".repeat(5000));
text("9".repeat(4001));
text(" ".repeat(3000) + "x" + "\n".repeat(500) + "\t".repeat(300));
text(Array.from({ length: 3000 }, atom).join(""));

// 4. Ill-formed UTF-8 (calm reads it as TextDecoder does: U+FFFD per maximal ill-formed part).
const bytes = (...b) => records.push(Buffer.from(b));
const invalid = [
  [0x80], [0xbf], [0xc0, 0xaf], [0xc1, 0xbf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80],
  [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80], [0xfe], [0xff], [0xe6, 0x97], [0xf0, 0x9f, 0x98],
  [0x61, 0xe6, 0x97, 0x62], [0xf0, 0x9f, 0x98, 0x20, 0x61], [0xc3], [0xe2, 0x82],
  [0x48, 0x69, 0x20, 0xff, 0xfe, 0x20, 0x77], [0xc3, 0xa9, 0x80, 0xc3, 0xa9], [0xef, 0xbb, 0xbf, 0x41],
];
for (const b of invalid) bytes(...b);
for (let i = 0; i < 300; ++i) {
  const n = int(1, 24);
  const b = [];
  for (let k = 0; k < n; ++k) b.push(random() < 0.5 ? int(0x20, 0x7e) : int(0x80, 0xff));
  bytes(...b);
}

const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
const hex = (buf) => Buffer.from(buf).toString("hex");
mkdirSync(outDir, { recursive: true });
let lines = [];
for (const r of records) {
  const ids = tokenizer.encode(decoder.decode(r), { add_special_tokens: false }).ids;
  lines.push(hex(r) + "\t" + ids.join(" "));
}
writeFileSync(join(outDir, "records.tsv"), lines.join("\n") + "\n");

// Decoding: random id sequences, many of single-byte and partial-character pieces.
const vocab = tokenizer.get_vocab(true);
const byteIds = [...vocab.entries()].filter(([t]) => [...t].length === 1).map(([, id]) => id);
lines = [];
for (let i = 0; i < 3000; ++i) {
  const ids = Array.from({ length: int(1, 8) }, () => {
    const r = random();
    return r < 0.6 ? pick(byteIds) : r < 0.9 ? int(0, 127999) : int(128000, 128255);
  });
  const out = tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  lines.push(ids.join(" ") + "\t" + hex(Buffer.from(out, "utf8")));
}
writeFileSync(join(outDir, "decode.tsv"), lines.join("\n") + "\n");

// The Llama 3.1 form of the same file: BOS added by the template, merges as pairs.
const bos = "<|begin_of_text|>";
const templated = structuredClone(tokenizerJson);
templated.post_processor = {
  type: "Sequence",
  processors: [
    { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { [bos]: { id: bos, ids: [128000], tokens: [bos] } },
    },
  ],
};
templated.model.merges = templated.model.merges.map((m) => m.split(" "));
mkdirSync(join(outDir, "template"), { recursive: true });
writeFileSync(join(outDir, "template", "tokenizer.json"), JSON.stringify(templated));
const templatedTokenizer = new Tokenizer(templated, tokenizerConfig);
lines = [];
for (let i = 0; i < records.length; i += 7) {
  const ids = templatedTokenizer.encode(decoder.decode(records[i])).ids;
  lines.push(hex(records[i]) + "\t" + ids.join(" "));
}
writeFileSync(join(outDir, "template.tsv"), lines.join("\n") + "\n");
console.log(`encode_reference: ${records.length} records, ${lines.length} with the template, 3000 decodes`);
