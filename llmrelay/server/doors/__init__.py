"""The gateway's front doors: each one translates its API shape to the one neutral call and back."""
