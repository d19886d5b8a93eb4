"""A stand-in for a real processing step: reads its input, writes output.fits."""
import argparse
import time

parser = argparse.ArgumentParser()
parser.add_argument("--input", required=True)
args = parser.parse_args()
time.sleep(1)
with open("output.fits", "w") as out:
    out.write(f"processed {args.input}\n")
print(f"processed {args.input} -> output.fits")
