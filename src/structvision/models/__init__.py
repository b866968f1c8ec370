"""structvision.models."""
