"""Commands that compose stages: they sit above every stage and may import any of them."""
