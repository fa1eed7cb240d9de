"""Real-time webcam classification: `python -m camera_demo`."""
