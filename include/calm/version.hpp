// calm's version; CMakeLists.txt reads it from here, so there is one place to change it.
#pragma once

#define CALM_VERSION_MAJOR 0
#define CALM_VERSION_MINOR 2
#define CALM_VERSION_PATCH 0
// One number to compare: 10000 * major + 100 * minor + patch.
#define CALM_VERSION (CALM_VERSION_MAJOR * 10000 + CALM_VERSION_MINOR * 100 + CALM_VERSION_PATCH)
