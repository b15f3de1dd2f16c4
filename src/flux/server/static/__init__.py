"""Files the server serves as they are (the API docs page), and the code that serves them."""
