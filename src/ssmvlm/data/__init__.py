"""Data: the embedded ShapeScenes benchmark, real-dataset loaders and the shared image transforms."""
