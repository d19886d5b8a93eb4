"""A stand-in for an analysis step: needs the output.fits written by process.py."""
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--input", required=True)
args = parser.parse_args()
with open(args.input) as data:
    print(f"analysed: {data.read().strip()}")
