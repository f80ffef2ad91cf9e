"""The model, a plain PyTorch trainer, evaluation metrics and plots."""
