"""Static checks of docker/: no Docker engine needed, the files are read and cross-checked."""
