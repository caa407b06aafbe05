"""The patent's generator (§0090–§0155): MC-AAD layers, residual blocks, the multi-level attribute
encoder, the generator G and a multi-scale discriminator. One module per box of FIG. 3 and FIG. 4."""
