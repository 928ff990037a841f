//! Time types shared by every document.
