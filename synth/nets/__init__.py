"""Networks of Zakharov et al. 2019 (E, G with P, projection D), their blocks, losses and config."""
