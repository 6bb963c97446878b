"""Data read from files: .npz (npz.py), one array in a .npy, .csv or .parquet file
(single_array.py), IDX files, the MNIST format (idx.py), and folders of images
(folder.py), decoded once into a cache (folder_cache.py) one image at a time (images.py).
Built on the data core; never imports the row sources."""
