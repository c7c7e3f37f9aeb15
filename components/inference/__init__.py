"""Inference on the line: score new images with a model bundle, and export it to ONNX.

`oesdn predict` and `oesdn export` (pipelines/commands/inference.py) are thin shells over this
package; everything here reads the one bundle format, so predictions match the evaluate stage.
"""
