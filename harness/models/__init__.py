"""Search spaces, the shared Graph description, exporters and the content-addressed model cache."""
