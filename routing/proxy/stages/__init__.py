"""The pipeline's stages, one module each, in the order routing.proxy.pipeline runs them."""
