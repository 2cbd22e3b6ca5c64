"""In-memory sources of the ingest component, one module per kind of source.

- `splits`: `LoadedData` (what every loader returns) and the split rules;
- `files`: user files (``.npy``/``.npz``, IDX, a folder of images) and the value checks and
  metadata rules they share with the streamed sources (`components.ingest.streaming`);
- `bundled`: offline datasets (sklearn's moons and digits, MNIST from the shared data folder);
- `benchmarks`: the MAF paper's six benchmarks, read with the paper's preprocessing.

Each of `files`, `bundled` and `benchmarks` exports ``LOADERS`` (dataset name -> loader);
`components.ingest.loaders.load_in_memory` dispatches over them.
"""
