"""`python -m keras_cam ...` runs the `keras-cam` command line."""
from keras_cam.cli import main

raise SystemExit(main())
