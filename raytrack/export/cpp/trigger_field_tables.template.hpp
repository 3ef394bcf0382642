// @part a trigger header's x tables (the path base's, with x dependence): a host array only
// The path base's x tables, rows of @nodes@ nodes: the @degree@ coefficients of (x / x_scale)^1..@degree@
// (T), then their dz derivatives (T/mm)@errors@. A host array only: a CUDA program copies
// it to global memory and passes that pointer (see the top of the header).
@define@inline constexpr Real kFieldTables[@size@] = {@macro@};
#undef @macro@

