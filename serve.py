"""The local web page for a trained model: python serve.py ckpt=PATH [port=8000]"""
from bloodcell.tools.serve import main

if __name__ == "__main__":
    main()
