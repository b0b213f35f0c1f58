"""Drivable area on the ground: camera models, ground-plane projection, the bird's-eye grid,
ego-vehicle masks. numpy and OpenCV only; the ROS node and bag-eval convert their messages
into the plain numbers these take."""
