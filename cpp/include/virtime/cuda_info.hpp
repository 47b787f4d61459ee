// Whether CUDA was compiled in, and whether a device can be used now.
#pragma once

namespace virtime {

bool built_with_cuda();
// Compiled in AND at least one device visible; never throws.
bool cuda_available();

}  // namespace virtime
