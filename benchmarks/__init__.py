"""Speed, accuracy and calibration benchmarks; each writes results/<name>.json and .md."""
