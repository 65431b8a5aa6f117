"""The console's services: plain functions taking a Session, a Clock and an actor."""
