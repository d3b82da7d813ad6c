"""Train a blood-cell classifier: python train.py [model=effnet_b6 optim=adam ...] | -m optim=adam,sgd,lion"""
from bloodcell.tools.train import main

if __name__ == "__main__":
    main()
