// calm is header-only for its users. calm's own programs, tests and benchmarks compile a few
// heavy non-template functions once instead (the calm_compiled library, src/), as they do the
// weight formats' kernels (CALM_COMPILED_FORMATS, formats/formats.hpp): with CALM_COMPILED
// defined, such a function's header only declares it, and one unit of src/ (which also defines
// CALM_COMPILED_SOURCE) compiles its body. A user may do the same: compile src/io/*.cpp into the
// build and define CALM_COMPILED everywhere.
//
//   CALM_COMPILED_INLINE  on the declaration and the definition: `inline` when header-only
//   CALM_COMPILED_DEFINE  1 where this unit must compile the bodies (header-only, or src/)
#pragma once

#ifdef CALM_COMPILED
#define CALM_COMPILED_INLINE
#else
#define CALM_COMPILED_INLINE inline
#endif

#if !defined(CALM_COMPILED) || defined(CALM_COMPILED_SOURCE)
#define CALM_COMPILED_DEFINE 1
#else
#define CALM_COMPILED_DEFINE 0
#endif
