// Built when CUDA is off: the GPU entry points report that this build has no CUDA.
namespace wpack { int kernels_placeholder = 0; }
