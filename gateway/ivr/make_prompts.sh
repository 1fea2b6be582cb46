#!/bin/sh
# Regenerate the IVR's spoken prompts (run once; the WAVs are kept in the repo so the gateway
# needs neither espeak-ng nor sox at run time).  Output: 8 kHz mono 16-bit PCM WAV, which the
# IVR plays as is on G.711 legs and upsamples for G.722.
#   sh gateway/ivr/make_prompts.sh        (needs espeak-ng and sox: Makefile APT_PACKAGES)
set -eu
cd "$(dirname "$0")/prompts"
say() {  # say NAME TEXT
    espeak-ng -v en-us -s 150 -w "$1.raw.wav" "$2"
    sox "$1.raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$1.wav" norm -3
    rm -f "$1.raw.wav"
}
say enter_meeting "Welcome. Please enter the meeting number, followed by the pound key."
say enter_pin "Please enter the meeting PIN, followed by the pound key."
say wrong_pin "That PIN is not correct."
say unknown_meeting "That meeting is not available."
say joining "Joining the meeting."
say lobby "Please wait. You will join when the host lets you in."
say goodbye "Goodbye."
