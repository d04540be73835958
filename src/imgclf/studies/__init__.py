"""Studies: controlled comparisons of init schemes and regularisers, layer statistics, search."""
