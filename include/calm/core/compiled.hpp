// calm is header-only for its users. calm's own programs, tests and benchmarks compile a few
// heavy non-template functions once instead (the calm_compiled library, src/), as they do the
// weight formats' kernels (CALM_COMPILED_FORMATS, formats/formats.hpp). With CALM_COMPILED
// defined, such a function's header only declares it; its bodies stand under
// `#if !defined(CALM_COMPILED) || defined(CALM_COMPILE_<HEADER>)`, and the one unit of src/ that
// defines CALM_COMPILE_<HEADER> compiles them. A user may do the same: compile src/io/json.cpp
// and src/backends/llama_weights.cpp into the build and define CALM_COMPILED everywhere.
//
//   CALM_COMPILED_INLINE  on such a function's declaration and definition: `inline` when
//                         header-only, nothing when compiled
#pragma once

#ifdef CALM_COMPILED
#define CALM_COMPILED_INLINE
#else
#define CALM_COMPILED_INLINE inline
#endif
