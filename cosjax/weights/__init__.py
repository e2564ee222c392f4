"""Checkpoint reading (safetensors), key maps, conversion to Orbax and loading."""
