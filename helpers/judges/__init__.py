"""Stage 3, judges score the synthetic voxels against the real ones: the autoencoder and its
training, reconstruction metrics, two-sample realism, distances to the floor, the known-answer
checks, the statistics between generators."""
