"""Driving on nuScenes (DriveAgent-R1): a generator for small datasets in the exact nuScenes
layout (synth.py), devkit access shared by the domain and the tools (nusc.py), and the
meta-action labels derived from future ego poses (labels.py)."""
