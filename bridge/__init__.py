"""Media: RTP legs toward legacy endpoints, codecs, and the WebRTC leg toward the conference core."""
