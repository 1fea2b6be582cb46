"""SIP without I/O (message model, SDP, transactions, dialogs) plus thin Twisted transports."""
