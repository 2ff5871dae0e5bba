//! criterion benchmarks of loam; the benchmarks are in `benches/`.
