// All of calm's compute kernels (xsimd, templated on Arch = xsimd::default_arch) and their
// scalar reference twins in calm::kernels::scalar.
#pragma once

#include "calm/core/thread_pool.hpp"
#include "calm/kernels/argmax.hpp"
#include "calm/kernels/attention.hpp"
#include "calm/kernels/cosine.hpp"
#include "calm/kernels/elementwise.hpp"
#include "calm/kernels/load.hpp"
#include "calm/kernels/matmul.hpp"
#include "calm/kernels/matvec.hpp"
#include "calm/kernels/q4_0.hpp"
#include "calm/kernels/q8_0.hpp"
#include "calm/kernels/rmsnorm.hpp"
#include "calm/kernels/rope.hpp"
#include "calm/kernels/softmax.hpp"
