"""What leaves the process when a request moves: final-state announcements, webhooks, pages, pushes."""
