const QUESTIONS = [
  {q: 'What is the capital of Canada?', a: ['Toronto', 'Ottawa', 'Vancouver'], hint: 'It is in Ontario, on a river.'},
  {q: 'What is the capital of Australia?', a: ['Sydney', 'Canberra', 'Perth'], hint: 'It was planned in 1913.'},
  {q: 'What is the capital of Kenya?', a: ['Nairobi', 'Mombasa', 'Kisumu'], hint: 'Its name means cool water.'},
];
let i = 0;
function show() {
  const item = QUESTIONS[i];
  document.getElementById('step').textContent = 'Question ' + (i + 1) + ' of ' + QUESTIONS.length;
  document.getElementById('q').textContent = item.q;
  const list = document.getElementById('answers');
  list.innerHTML = '';
  for (const a of item.a) { const li = document.createElement('li'); li.textContent = a; list.appendChild(li); }
  const hint = document.getElementById('hint-text');
  hint.hidden = true; hint.textContent = item.hint;
}
document.getElementById('next').addEventListener('click', () => { i = (i + 1) % QUESTIONS.length; show(); });
document.getElementById('hint').addEventListener('click', () => { document.getElementById('hint-text').hidden = false; });
show();
