"""compiler/autodiff."""
