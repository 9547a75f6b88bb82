// The forward pass's phase profile lives in core (kernels count their bytes into it).
#pragma once

#include "core/profile.h"
