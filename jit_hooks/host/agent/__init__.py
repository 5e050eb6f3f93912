"""`jit-hooks agent`: holds the host event stream; ends sessions as soon as they lose access."""
