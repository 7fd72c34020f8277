"""View synthesis: models that turn one reference image into views from new camera poses."""
