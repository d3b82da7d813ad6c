"""Evaluate checkpoint(s): python evaluate.py ckpt=PATH [data=folder data.root=DIR]"""
from bloodcell.tools.evaluate import main

if __name__ == "__main__":
    main()
