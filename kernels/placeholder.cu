namespace wpack { __global__ void placeholder_kernel() {} }
