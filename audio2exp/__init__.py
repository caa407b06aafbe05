"""Expression codes from speech, for camera-off calls and lost video packets (see issue 5).

Its models predict the same code as the video path, in the basis of callsynth/face/basis.py.
"""
