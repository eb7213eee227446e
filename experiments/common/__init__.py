"""The experiment layer's shared pieces: flags, run folders, outputs."""
