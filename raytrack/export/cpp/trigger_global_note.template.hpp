// @part the trigger header's paragraph on its x tables, in global memory on a GPU
// Global data: @global_tables@: data::kFieldTables, kFieldTableBytes
// bytes. With the rest they would outgrow the 64 KB of constant memory, so they are a host
// array: a CUDA program copies them once to device global memory and passes the pointer:
//   Real* tables = nullptr;  // Real: @namespace@::Real
//   cudaMalloc(&tables, @namespace@::kFieldTableBytes);
//   cudaMemcpy(tables, @namespace@::data::kFieldTables, @namespace@::kFieldTableBytes,
//              cudaMemcpyHostToDevice);
//   // in a kernel: @namespace@::predict(in, out, tables);
// Host code passes data::kFieldTables, or calls the two-argument forms (host only here).
