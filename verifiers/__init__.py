"""Pure checking functions (math equivalence, ...) and the isolation that
keeps a hanging or crashing check from taking a run down."""
