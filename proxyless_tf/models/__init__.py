"""Plain Keras networks built from an `Arch`: no search code, export without custom objects."""
