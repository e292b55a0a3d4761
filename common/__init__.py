"""What every app uses and that imports nothing of ours."""
