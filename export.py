"""Export a trained model: python export.py ckpt=PATH format=onnx|torchscript [out=FILE]"""
from bloodcell.tools.export import main

if __name__ == "__main__":
    main()
