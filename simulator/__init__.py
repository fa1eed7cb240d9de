"""The desk simulator: camera-like frames rendered from 28x28 images (``camera_sim``), for the camera
evaluation, the training recipe's camera crops, the tests and the demo's synthetic source; and the
sample video (``make_video``). A tool of the source tree: the wheel does not ship it."""
