// The Llama-family backend (Hugging Face LlamaForCausalLM semantics), in two parts:
//   calm::LlamaModel    config, weights and RoPE tables, immutable and shared
//                       (std::shared_ptr<const LlamaModel>) by every sequence on every thread;
//   calm::LlamaSession  one sequence: KV cache, scratch, the thread pool it runs on. It is the
//                       TransformerBackend that calm::Decoder composes.
//
//   auto model = calm::LlamaModel::load(dir);
//   auto pool = std::make_shared<calm::ThreadPool>(2);
//   calm::LlamaSession session(model, {.pool = pool});
#pragma once

#include <calm/backends/llama/model.hpp>
#include <calm/backends/llama/session.hpp>
